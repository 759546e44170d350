"""Where the gateway keeps what it must remember: audit events and virtual API keys."""
