"""The compute plane: QueueBridge, GraphWorker, HistoryActor and the store actor."""
