"""Who is who: signing keys with rotation and JWKS (`keys`), every callback token by jti
(`ledger`), callback/viewer/user tokens (`tokens`), the node CA (`node_ca`), which node
certificates the control plane stands behind (`node_certs`) and the agents' secret store
(`secrets`). May import storage and demand, and vm_agent.common (files only their owner
may read)."""
