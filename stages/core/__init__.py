"""What every stage shares: the artifact store and manifests, config loading, errors, console,
devices, the code version.
"""
