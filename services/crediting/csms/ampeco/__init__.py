"""AMPECO.CHARGE: everything the ampeco CSMS does lives in this package. ``wire`` holds its wire
format as pure functions (amounts, bodies, outcomes, signatures, notifications), ``client`` the HTTP
calls and their authentication, ``tenant`` the checks and the notification subscription made at
start and by ``evtopup setup``."""
