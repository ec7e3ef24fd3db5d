"""The viewer port's perimeter, before the server reads a message: tokens and JWKS (`auth`),
TLS contexts (`tls`), which addresses may listen in the clear (`exposure`), rate limits
(`ratelimit`). May import common, core, jsonrpc."""
