"""autotag: tag video clips and GIFs by the activities in them (MIL-NCE, S3D on HowTo100M)."""

__version__ = "0.1.0"
