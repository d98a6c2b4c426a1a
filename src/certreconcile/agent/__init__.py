"""The agent: a long-running process on a server host that deploys into its own local targets (design.md section 9).

It holds no database URL and no KMS credentials; the applier pushes bundles to it over mutual TLS.
"""
