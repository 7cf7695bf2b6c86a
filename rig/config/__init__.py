"""Reading what users write: safe YAML, validation into typed models with one-line errors, sites
and scenarios, shipped examples and defaults.
"""
