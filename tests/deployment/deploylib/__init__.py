"""Helpers of the deployment tests: process control, recording TLS tap, deployment harness."""
