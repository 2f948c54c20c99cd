"""Running as a service: metrics, health, systemd notifications, logging."""
