"""codesift.serve"""
