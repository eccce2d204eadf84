"""Face: the browser pages (server-rendered shells; small ES modules call the JSON API)."""
