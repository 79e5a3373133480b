"""A tiny module for the agent fleet example to work on."""
