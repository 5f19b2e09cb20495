"""An account's exact state (cash, reservations, average-cost holdings) and the rules that move it."""
