"""Who is who: signing keys with rotation and JWKS (`keys`), every callback token by jti
(`ledger`), callback/viewer/user tokens (`tokens`), the node CA (`node_ca`) and the agents'
secret store (`secrets`). May import storage and demand."""
