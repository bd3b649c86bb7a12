"""pacs-health-agent: health monitoring for Sectra IDS7 and other DICOM PACS."""

__version__ = "0.1.0"
