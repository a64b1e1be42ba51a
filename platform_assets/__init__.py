"""The Aegis asset graph: source → bronze → silver → gold → serving → reports."""
