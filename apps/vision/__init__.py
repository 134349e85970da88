"""The vision service: image classification (digits, a CNN), OCR and face detection."""
