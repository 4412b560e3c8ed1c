"""Notification delivery (issue 11 item 5): the notify events, delivered to the webhook endpoints and
e-mail addresses a tenant's admin or a clinician set up.

- `domain`: what is decided, as plain functions (secrets and signatures, which targets a
  notification goes to, what a try came to and when the next is due, the e-mail's words);
- `models` and `repository`: the gateway's tables of targets, deliveries and attempts;
- `handlers`: the consumer of `rapport.*.notify.>`, writing one delivery per matching target in
  the transaction that takes the event (an outbox of deliveries);
- `sender`: the background task that sends what is due, signs webhooks, records every attempt;
- `egress`: where a webhook may go (the SSRF guard), checked when a URL is given and on each try;
- `api`: `/api/v1/webhooks` and `/api/v1/email-subscriptions`;
- `wiring`: how app.py plugs the four into the gateway.
"""
