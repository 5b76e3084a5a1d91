"""The ground floor every room stands on: AWS clients (aws), DynamoDB access (db), settings (config),
time (clock), the API's errors, checks on what clients send (validation), the HTTP glue between
Chalice and the logic (web), responseType rendering (rendering) and the XML/YAML answer documents
(documents). Nothing here imports another room."""
