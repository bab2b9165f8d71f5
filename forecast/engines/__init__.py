"""The same monthly batch with the summary and the scoring on Spark, for logs that outgrow one machine."""
