"""Apps: what an account runs, from which image, pulled with which credential."""
