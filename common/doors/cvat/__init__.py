"""CVAT's door: its request formats, its reply formats and the Nuclio entry (../shared/docs/cvat-protocol.md)."""
