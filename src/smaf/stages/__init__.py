"""Pipeline stages: one function per workflow rule, built on the data/models/fusion layers."""
