"""What models take and give whatever the platform: images, results, labels, errors and settings."""
