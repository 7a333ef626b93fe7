package loader

var QueryProgIDs = queryProgIDs
