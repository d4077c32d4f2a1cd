"""Tests of the leviathan-cp command helpers."""
