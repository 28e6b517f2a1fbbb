"""The order book: FlexRequests from utilities and FlexOffers from flexibility sellers (USEF/UFTP)."""
