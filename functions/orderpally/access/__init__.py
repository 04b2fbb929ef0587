"""Who is calling, and what they may do (agreement 1.1(b), 1.3).

Every protected route asks this module for the caller and checks the object
it touches against them; nothing trusts an account id from the client.
"""
