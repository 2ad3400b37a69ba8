"""mpdrm package."""
