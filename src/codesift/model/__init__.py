"""codesift.model"""
