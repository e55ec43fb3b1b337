"""What every handler and adapter shares: protocol types, errors, settings, registry, store."""
