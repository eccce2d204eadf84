"""Four-eyes approval of admin actions that would let an admin read a sensitive document."""
