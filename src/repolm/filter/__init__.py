"""The filter stage: secrets and PII scrubbed, vendored/generated/duplicate files excluded."""
