"""What a run is on disk: the checkpointer (`checkpoint`), its logs and event files (`writers`,
`event_file`), the rails that stop or save it (`loss_guard`, `preemption`) and the pictures
made from it (`report`). Nothing here trains."""
