"""Google's Gemini image models (`kind: gemini`): `backend` (the EditBackend), `wire` (generateContent on the
wire, pure functions), `models` (model ids, rates and lifecycle as data from configs/prices.yaml)."""
