"""Built-in backends (imported as maskc.backends). Each subpackage registers itself on import.

`maskc.registry` imports them one by one (its BUILT_IN), so that one failing to import leaves the
others usable and its error is reported when it is asked for.
"""
