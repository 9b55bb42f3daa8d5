"""`rerec report`: tables, paired bootstrap intervals and plots over eval artifacts."""
