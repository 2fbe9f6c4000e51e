"""How traffic moves: one router per Traefik provider (CRD, file), both reading Traefik's API
through `traefik_api`."""
