"""What every model-facing stage shares: prompt rendering, model resolution, batched generation,
reading the boxed answer."""
