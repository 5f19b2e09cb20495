"""What the service knows of the market: latest prices and each symbol's trading rules."""
