"""The mailer example: render and send e-mails with zq tasks (see README.md here)."""
