"""One schema module per DynamoDB table (infra/resources.yaml): the table's name and the key of every
kind of item it holds, with the module that owns each item's fields. Keys are built here only."""
