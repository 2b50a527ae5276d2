"""Keeping the broker's accounts in step with the fleet's device credentials.

`BrokerAccounts` is what the fleet needs from a broker: set a device's password (creating its
account and its topic rules) and remove a device's account (which also disconnects it).
"""
