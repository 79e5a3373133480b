"""Scripted fakes of model provider APIs, for running agent CLIs offline in tests."""
