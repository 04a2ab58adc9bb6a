"""codesift.data"""
