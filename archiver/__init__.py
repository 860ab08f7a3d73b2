"""zoom-sms-archiver: a complete, verifiable, tamper-evident archive of Zoom Phone SMS/MMS."""

__version__ = "0.1.0.dev0"
