"""What lockgate sends out: webhook gates of a Deployment and notifications of an
Application both POST a JSON body, signed when a signing secret is set."""
