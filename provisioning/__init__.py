"""The field technician's provisioning tool."""
