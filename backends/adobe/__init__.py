"""Adobe Firefly Services (`kind: firefly`): `backend` (the EditBackend), `wire` (fill/expand/instruct-edit and
async jobs on the wire, pure functions), `auth` (IMS client-credentials tokens), `journal` (submitted job ids, so
a crashed run resumes polling instead of paying again)."""
