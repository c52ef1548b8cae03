"""Weave Net's wire vocabulary that several services speak, owned by none of them:
peer names (`peer_name`), the mesh protocol's message tags (`protocol_tags`), the NaCl
nonce scheme that the mesh connection and the sleeve share (`nonce`), and weaveDNS
name and address rules (`dns_names`). Nothing here imports a service."""
