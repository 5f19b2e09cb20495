"""Order rules (the exchange's filters, fees, price freshness) and the book of resting limit orders."""
