"""The macro-indicator flow: the central bank's series into bronze (as received), silver (exact decimals,
quarantine) and gold/sales_vs_inflation, failing gracefully, with its checks. Imports: layers, quality,
resources."""
