"""minflow"""
