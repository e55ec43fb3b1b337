"""Platform adapters: each turns its platform's requests into handler calls, and nothing more."""
