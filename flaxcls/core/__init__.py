"""The pure maths, no files, flags or logging: the train state and steps (`steps`), optimisers
and schedules (`optim`, `lookahead`), metrics as masked sums and evaluation scores (`metrics`,
`scores`), and how arrays lie on the devices (`sharding`, `distributed`)."""
