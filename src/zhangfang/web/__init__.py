"""Pages for people: the payer's cashier (收银台), rendered with Jinja2."""
